"""Tickerdash's ground floor: the event bus on Redis Streams (settings, schemas, codecs, I/O)."""
