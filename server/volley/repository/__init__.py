"""Model repository: layout, configuration, version policy and model lifecycle."""
