"""What browsers load: the built-in inbox page (`page`, at /) and the drop-in
<citelink-inbox> element with its demo (`element`, at /embed/)."""
