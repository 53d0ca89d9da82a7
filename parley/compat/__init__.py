"""One router per seed system's documented API, each a thin translation over the core."""
