# A Shale cluster on EC2: an etcd of etcd_count members, broker_count
# brokers spread over the subnets' zones with their hot tier on EBS or
# instance storage, an S3 bucket for the tiered history, and an internal
# NLB for the clients' bootstrap connection.
#
# Kafka clients connect first to a bootstrap address (the NLB) and then to
# each partition leader at the address that broker advertises. Every broker
# advertises its own fixed private address, so clients (and the other
# brokers, which replicate over the same listener) reach it directly, and
# the NLB is used only for the first Metadata request: clients must be in
# the VPC or a network routed to it (peering, Transit Gateway, VPN).
#
# TLS (tls_cert_pem, tls_key_pem, tls_ca_pem) and SASL (sasl_mechanisms,
# sasl_bootstrap_user and _password) are off by default. With TLS every
# broker presents one certificate, which must carry every broker's private
# IP address (they advertise no DNS names) and whatever name clients
# bootstrap by (the NLB's own DNS name is not known before it exists: give
# it one of yours, or bootstrap from the broker addresses). The key and the
# password reach the instances in their user data, as files only root or
# the shale user can read. ACLs (acls_enabled, super_users) are off too:
# with them the SASL bootstrap user, a super user, grants the others.

data "aws_subnet" "this" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == "" ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  subnets = length(var.subnet_ids)
  ami_id  = var.ami_id != "" ? var.ami_id : data.aws_ssm_parameter.ami[0].insecure_value
  tags    = merge({ "shale:cluster" = var.name }, var.tags)

  # Fixed private addresses: etcd members are named in each other's
  # --initial-cluster and in every broker's --etcd, and a broker keeps its
  # advertised address when its instance is replaced.
  etcd_ips = [
    for i in range(var.etcd_count) :
    cidrhost(data.aws_subnet.this[i % local.subnets].cidr_block, var.etcd_host_number + floor(i / local.subnets))
  ]
  broker_ips = [
    for i in range(var.broker_count) :
    cidrhost(data.aws_subnet.this[i % local.subnets].cidr_block, var.broker_host_number + floor(i / local.subnets))
  ]
  broker_zones = [for i in range(var.broker_count) : data.aws_subnet.this[i % local.subnets].availability_zone]

  etcd_endpoints   = [for ip in local.etcd_ips : "${ip}:2379"]
  etcd_cluster     = join(",", [for i, ip in local.etcd_ips : "${var.name}-etcd-${i}=http://${ip}:2380"])
  etcd_arch        = var.architecture == "x86_64" ? "amd64" : "arm64"
  etcd_url         = var.etcd_download_url != "" ? var.etcd_download_url : "https://github.com/etcd-io/etcd/releases/download/${var.etcd_version}/etcd-${var.etcd_version}-linux-${local.etcd_arch}.tar.gz"
  object_store_url = "s3://${aws_s3_bucket.this.bucket}/${var.object_prefix}?region=${aws_s3_bucket.this.region}"
  replication      = min(var.default_replication_factor, var.broker_count)
}
