# Kafka from the allowed networks (through the NLB and directly to each
# broker's advertised address), replication between brokers, etcd's client
# port from the brokers and its peer port between members only.

resource "aws_security_group" "nlb" {
  name_prefix = "${var.name}-nlb-"
  description = "Shale NLB: Kafka bootstrap from the allowed networks"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "broker" {
  name_prefix = "${var.name}-broker-"
  description = "Shale brokers"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-broker" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "etcd" {
  name_prefix = "${var.name}-etcd-"
  description = "Shale etcd members"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-etcd" })

  lifecycle {
    create_before_destroy = true
  }
}

# NLB.

resource "aws_vpc_security_group_ingress_rule" "nlb_kafka" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "Kafka bootstrap"
  ip_protocol       = "tcp"
  from_port         = var.kafka_port
  to_port           = var.kafka_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_brokers" {
  for_each                     = toset([tostring(var.kafka_port), tostring(var.http_port)])
  security_group_id            = aws_security_group.nlb.id
  description                  = "to the brokers (traffic and health checks)"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.broker.id
}

# Brokers.

resource "aws_vpc_security_group_ingress_rule" "broker_kafka_clients" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.broker.id
  description       = "Kafka clients at the advertised address"
  ip_protocol       = "tcp"
  from_port         = var.kafka_port
  to_port           = var.kafka_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "broker_kafka_nlb" {
  security_group_id            = aws_security_group.broker.id
  description                  = "Kafka through the NLB"
  ip_protocol                  = "tcp"
  from_port                    = var.kafka_port
  to_port                      = var.kafka_port
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_kafka_replication" {
  security_group_id            = aws_security_group.broker.id
  description                  = "replication between brokers"
  ip_protocol                  = "tcp"
  from_port                    = var.kafka_port
  to_port                      = var.kafka_port
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_http_nlb" {
  security_group_id            = aws_security_group.broker.id
  description                  = "NLB health checks on /readyz"
  ip_protocol                  = "tcp"
  from_port                    = var.http_port
  to_port                      = var.http_port
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_http_monitoring" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.broker.id
  description       = "metrics and health"
  ip_protocol       = "tcp"
  from_port         = var.http_port
  to_port           = var.http_port
  cidr_ipv4         = each.value
}

# Out: S3, etcd, the downloads at boot.
resource "aws_vpc_security_group_egress_rule" "broker_all" {
  security_group_id = aws_security_group.broker.id
  description       = "S3, etcd, downloads"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# etcd.

resource "aws_vpc_security_group_ingress_rule" "etcd_client_brokers" {
  security_group_id            = aws_security_group.etcd.id
  description                  = "etcd clients: the brokers"
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2379
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_ingress_rule" "etcd_client_members" {
  security_group_id            = aws_security_group.etcd.id
  description                  = "etcd clients: the members (etcdctl on a member)"
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2379
  referenced_security_group_id = aws_security_group.etcd.id
}

resource "aws_vpc_security_group_ingress_rule" "etcd_peer" {
  security_group_id            = aws_security_group.etcd.id
  description                  = "etcd peers"
  ip_protocol                  = "tcp"
  from_port                    = 2380
  to_port                      = 2380
  referenced_security_group_id = aws_security_group.etcd.id
}

resource "aws_vpc_security_group_egress_rule" "etcd_all" {
  security_group_id = aws_security_group.etcd.id
  description       = "peers, downloads"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}
