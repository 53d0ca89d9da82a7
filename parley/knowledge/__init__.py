"""Knowledge bases: ingest documents, search them (BM25 + dense, fused), ground answers in them."""
