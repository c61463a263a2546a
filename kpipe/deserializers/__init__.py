"""Built-in deserializers."""
