"""Model backends behind one small streaming interface (``Provider.stream``)."""
