variable "log_retention_days" {
  description = "How long the app's logs are kept."
  type        = number
  default     = 30
}
