function_name      = "orders-prd"
memory_size        = 1024
log_retention_days = 90
