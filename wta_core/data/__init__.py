"""Dataset sources (GTZAN folder, Hugging Face copy, embedded corpus) and the track catalog."""
