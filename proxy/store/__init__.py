"""Storage: the metadata database, the blob store and the index renderer."""
