# acme's shared infrastructure: the functions' aliases, the HTTP API, the queue. The functions'
# code comes from acme/api's build (dist/*.zip, in the artifact bucket under api/<commit>/).
variable "api_version" { type = string }   # the acme/api commit whose zips are deployed
variable "memory_size" { type = number }

resource "aws_sqs_queue" "orders" {
  name                       = "acme-orders"
  visibility_timeout_seconds = 60
}

resource "aws_lambda_function" "api" {
  function_name = "acme-api"
  s3_bucket     = "acme-artifacts"
  s3_key        = "api/${var.api_version}/api.zip"
  handler       = "handler.handler"
  runtime       = "python3.12"
  memory_size   = var.memory_size
  role          = "arn:aws:iam::123456789012:role/acme-api"
}

resource "aws_lambda_function" "worker" {
  function_name = "acme-worker"
  s3_bucket     = "acme-artifacts"
  s3_key        = "api/${var.api_version}/worker.zip"
  handler       = "handler.handler"
  runtime       = "python3.12"
  memory_size   = var.memory_size
  role          = "arn:aws:iam::123456789012:role/acme-worker"
}
