"""The wire contract in code: every Redis key name, and the encoding and decoding of every entry kind.

Writers and readers (producers, workers, the gateway, export, archive, the CLI) use these modules and
nothing else to name a key or read an entry's fields; docs/design.md documents them, and a test keeps
the two in step.
"""
