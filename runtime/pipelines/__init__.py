"""Understanding and generation: the same code for every backend."""
