class IngestError(Exception):
    """A corpus could not be ingested (bad source, unreachable site, bad option): one line."""
