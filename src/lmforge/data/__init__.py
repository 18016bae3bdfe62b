"""Raw text to token shards: sources and readers, cleaning and splits, tokenization, shards and datasets."""
