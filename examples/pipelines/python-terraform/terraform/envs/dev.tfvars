function_name      = "orders-dev"
memory_size        = 256
log_retention_days = 7
