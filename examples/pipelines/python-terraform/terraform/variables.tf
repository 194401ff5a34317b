variable "function_name" { type = string }
variable "memory_size" { type = number }
variable "log_retention_days" { type = number }
variable "lambda_zip" {
  type    = string
  default = "dist/lambda.zip"         # the package order's artifact, placed here by inputs
}
variable "role_arn" {
  type    = string
  default = "arn:aws:iam::123456789012:role/orders-lambda"
}
