terraform {
  backend "s3" {}                     # bucket and key given at init (-backend-config)
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
  }
}

resource "aws_lambda_function" "orders" {
  function_name    = var.function_name
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  handler          = "handler.handler"
  runtime          = "python3.12"
  memory_size      = var.memory_size
  role             = var.role_arn
}

resource "aws_cloudwatch_log_group" "orders" {
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
}
