"""``volley batch``: score a file of rows through a model offline, resumably, in chunks."""
