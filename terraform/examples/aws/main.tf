# A complete Shale cluster in a new VPC: three private subnets in three
# zones (the cluster and its internal NLB), one public subnet with a NAT
# gateway (the instances download shale and etcd at boot), and an S3
# gateway endpoint so that tiered storage traffic does not pass the NAT.

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  zones = slice(data.aws_availability_zones.available.names, 0, 3)
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "aws_subnet" "private" {
  count             = 3
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  availability_zone = local.zones[count.index]
  tags              = { Name = "${var.name}-private-${local.zones[count.index]}" }
}

resource "aws_subnet" "public" {
  vpc_id                  = aws_vpc.this.id
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, 15)
  availability_zone       = local.zones[0]
  map_public_ip_on_launch = false
  tags                    = { Name = "${var.name}-public" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

resource "aws_eip" "nat" {
  domain = "vpc"
  tags   = { Name = "${var.name}-nat" }
}

resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public.id
  tags          = { Name = var.name }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-public" }

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-private" }

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this.id
  }
}

resource "aws_route_table_association" "private" {
  count          = 3
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = { Name = "${var.name}-s3" }
}

module "shale" {
  source = "../../modules/shale"

  # vpc_id and subnet_ids through the endpoint and the route table
  # associations, so that the instances boot with their routes to S3 and
  # to the NAT gateway in place.
  name                   = var.name
  vpc_id                 = aws_vpc_endpoint.s3.vpc_id
  subnet_ids             = aws_route_table_association.private[*].subnet_id
  allowed_cidrs          = length(var.allowed_cidrs) > 0 ? var.allowed_cidrs : [var.vpc_cidr]
  monitoring_cidrs       = [var.vpc_cidr]
  shale_binary_url       = var.shale_binary_url
  shale_binary_sha256    = var.shale_binary_sha256
  broker_count           = var.broker_count
  broker_instance_type   = var.broker_instance_type
  hot_tier               = var.hot_tier
  broker_volume_size_gb  = var.broker_volume_size_gb
  etcd_instance_type     = var.etcd_instance_type
  max_connections        = var.max_connections
  max_connections_per_ip = var.max_connections_per_ip
  replica_selector       = var.replica_selector
  enable_ssm             = true

  sasl_mechanisms         = var.sasl_mechanisms
  sasl_bootstrap_user     = var.sasl_bootstrap_user
  sasl_bootstrap_password = var.sasl_bootstrap_password
  acls_enabled            = var.acls_enabled
  super_users             = var.super_users
  tls_cert_pem            = var.tls_cert_file != "" ? file(var.tls_cert_file) : ""
  tls_key_pem             = var.tls_key_file != "" ? file(var.tls_key_file) : ""
  tls_ca_pem              = var.tls_ca_file != "" ? file(var.tls_ca_file) : ""
  tls_client_auth         = var.tls_client_auth
}
