terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # bucket, key and region are given by the order (terraform init -backend-config=...)
  backend "s3" {}
}

provider "aws" {
  default_tags {
    tags = {
      ManagedBy = "iac-ci"
      Root      = "infra/app"
    }
  }
}

# the VPC infra/network manages, found by its tags: the two roots share no state
data "aws_vpc" "main" {
  tags = {
    Name = "acme-main"
  }
}

resource "aws_security_group" "app" {
  name        = "acme-app"
  description = "The app's tasks: outbound HTTPS only"
  vpc_id      = data.aws_vpc.main.id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.app.id
  description       = "HTTPS to anywhere"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_cloudwatch_log_group" "app" {
  name              = "/acme/app"
  retention_in_days = var.log_retention_days
}
