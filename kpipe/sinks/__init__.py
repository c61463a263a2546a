"""Built-in sinks, one folder each. Each folder's ``__init__`` holds only the plugin
descriptor (name, config schema, capabilities) so validation never imports the sink itself."""
