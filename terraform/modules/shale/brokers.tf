# broker_count brokers, broker i in subnet i modulo the subnets (so in
# zone i modulo the zones, which is its --rack), at a fixed private
# address that it advertises. Its local log lives on a gp3 volume of its
# own (hot_tier = "ebs", kept when the instance is replaced) or on the
# instance's NVMe instance storage (hot_tier = "instance-store").
# Changes of AMI or boot script do not replace running brokers: roll them
# one at a time (terraform apply -replace='module.shale.aws_instance.broker[0]').

locals {
  ebs = var.hot_tier == "ebs"

  # What the boot script writes to files: base64 (decoded there), so that
  # no character of a PEM or a password means anything to bash. The key is
  # read only with a certificate, and the test of the password is
  # nonsensitive (it reveals only whether there is one), so that without
  # TLS and SASL the user data is not marked sensitive and plans show it.
  tls      = var.tls_cert_pem != ""
  tls_cert = local.tls ? base64encode(var.tls_cert_pem) : ""
  tls_key  = local.tls ? base64encode(var.tls_key_pem) : ""
  tls_ca   = local.tls && var.tls_ca_pem != "" ? base64encode(var.tls_ca_pem) : ""
  # The EnvironmentFile= of the shale unit. systemd takes an unquoted
  # value's characters after a backslash verbatim (spaces, quotes, $, #,
  # backslashes), so each character of the password gets one.
  sasl_password = nonsensitive(var.sasl_bootstrap_password == "")
  sasl_env      = local.sasl_password ? "" : base64encode("SHALE_SASL_BOOTSTRAP_PASSWORD=${replace(var.sasl_bootstrap_password, "/(.)/", "\\$1")}\n")
}

resource "aws_ebs_volume" "broker" {
  count             = local.ebs ? var.broker_count : 0
  availability_zone = local.broker_zones[count.index]
  type              = "gp3"
  size              = var.broker_volume_size_gb
  iops              = var.broker_volume_iops
  throughput        = var.broker_volume_throughput
  encrypted         = true
  tags              = merge(local.tags, { Name = "${var.name}-broker-${count.index}-log" })
}

resource "aws_instance" "broker" {
  count                  = var.broker_count
  ami                    = local.ami_id
  instance_type          = var.broker_instance_type
  subnet_id              = var.subnet_ids[count.index % local.subnets]
  private_ip             = local.broker_ips[count.index]
  vpc_security_group_ids = [aws_security_group.broker.id]
  iam_instance_profile   = aws_iam_instance_profile.broker.name
  key_name               = var.key_name

  user_data = templatefile("${path.module}/templates/broker.sh.tftpl", {
    shale_url    = var.shale_binary_url
    shale_sha256 = var.shale_binary_sha256
    # The log volume's NVMe serial is its id without the dash.
    ebs_serial   = local.ebs ? replace(aws_ebs_volume.broker[count.index].id, "-", "") : ""
    id           = count.index
    cluster      = var.name
    kafka_port   = var.kafka_port
    http_port    = var.http_port
    advertised   = "${local.broker_ips[count.index]}:${var.kafka_port}"
    rack         = local.broker_zones[count.index]
    etcd         = join(",", local.etcd_endpoints)
    object_store = local.object_store_url
    replication  = local.replication
    max_conns    = var.max_connections
    max_conns_ip = var.max_connections_per_ip
    selector     = var.replica_selector
    extra_args   = var.broker_extra_args
    # TLS and SASL ("" when off).
    tls_cert        = local.tls_cert
    tls_key         = local.tls_key
    tls_ca          = local.tls_ca
    tls_client_auth = var.tls_client_auth
    sasl_mechanisms = join(",", var.sasl_mechanisms)
    sasl_user       = var.sasl_bootstrap_user
    sasl_env        = local.sasl_env
    # ACLs.
    acls           = var.acls_enabled
    super_users    = join(";", var.super_users)
    allow_everyone = var.allow_everyone_if_no_acl_found
  })

  root_block_device {
    volume_type = "gp3"
    volume_size = var.broker_root_volume_size_gb
    encrypted   = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags        = merge(local.tags, { Name = "${var.name}-broker-${count.index}" })
  volume_tags = local.tags

  lifecycle {
    ignore_changes = [ami, user_data]

    # What shale broker would refuse at start, refused at plan.
    precondition {
      condition     = local.tls == !nonsensitive(var.tls_key_pem == "")
      error_message = "tls_cert_pem and tls_key_pem: both or neither."
    }
    precondition {
      condition     = local.tls || (var.tls_ca_pem == "" && var.tls_client_auth == "none")
      error_message = "tls_ca_pem and tls_client_auth need tls_cert_pem and tls_key_pem (a TLS listener)."
    }
    precondition {
      condition     = var.tls_client_auth == "none" || var.tls_ca_pem != ""
      error_message = "tls_client_auth ${var.tls_client_auth} needs tls_ca_pem, the CA certificates clients' certificates are verified with."
    }
    precondition {
      condition     = (var.sasl_bootstrap_user == "") == local.sasl_password
      error_message = "sasl_bootstrap_user and sasl_bootstrap_password: both or neither."
    }
    precondition {
      condition     = var.acls_enabled || (length(var.super_users) == 0 && !var.allow_everyone_if_no_acl_found)
      error_message = "super_users and allow_everyone_if_no_acl_found need acls_enabled (without it every client may do anything)."
    }
  }

  depends_on = [aws_instance.etcd, aws_s3_bucket_policy.this]
}

resource "aws_volume_attachment" "broker" {
  count       = local.ebs ? var.broker_count : 0
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.broker[count.index].id
  instance_id = aws_instance.broker[count.index].id
}
