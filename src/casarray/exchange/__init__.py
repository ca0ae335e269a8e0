"""Exchange knowledge: the service catalog and the namespace toolkit."""
