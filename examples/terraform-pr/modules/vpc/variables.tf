variable "name" {
  description = "Name of the VPC; its subnets are named after it."
  type        = string
}

variable "cidr_block" {
  description = "CIDR block of the VPC, e.g. 10.20.0.0/16."
  type        = string
}

variable "az_count" {
  description = "How many availability zones get a private subnet."
  type        = number
  default     = 2
}
