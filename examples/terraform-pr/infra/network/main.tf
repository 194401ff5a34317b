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

# credentials and region come from the order's environment (aws_role, AWS_REGION)
provider "aws" {
  default_tags {
    tags = {
      ManagedBy = "iac-ci"
      Root      = "infra/network"
    }
  }
}

module "vpc" {
  source = "../../modules/vpc"

  name       = "acme-main"
  cidr_block = "10.20.0.0/16"
  az_count   = 2
}
