"""The base every other package may import: where things live, which code ran, file digests.

It imports nothing of ours, so scrapers/, cleaners/, training/ and flows/ can all agree on
these without importing each other.
"""
