"""Corpora: the registry (registry.py), the polite HTTP fetcher (fetch.py), the on-disk
corpus writer (store.py), ingest() (ingest.py), a loopback mirror server (mirror.py) and one
module per corpus, each registering a CorpusSpec."""
