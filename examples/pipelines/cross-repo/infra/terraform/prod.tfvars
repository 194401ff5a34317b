memory_size = 512
