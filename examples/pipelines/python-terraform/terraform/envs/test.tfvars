function_name      = "orders-test"
memory_size        = 512
log_retention_days = 14
