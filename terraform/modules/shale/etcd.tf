# etcd_count members, one per zone, each at a fixed private address so the
# static --initial-cluster names them all. Their data directory is on the
# root volume. A member whose instance is replaced starts empty and must be
# re-added with etcdctl member remove / member add (see the README); so
# changes of AMI or boot script do not replace running members.

resource "aws_instance" "etcd" {
  count                  = var.etcd_count
  ami                    = local.ami_id
  instance_type          = var.etcd_instance_type
  subnet_id              = var.subnet_ids[count.index % local.subnets]
  private_ip             = local.etcd_ips[count.index]
  vpc_security_group_ids = [aws_security_group.etcd.id]
  iam_instance_profile   = var.enable_ssm ? aws_iam_instance_profile.etcd[0].name : null
  key_name               = var.key_name

  user_data = templatefile("${path.module}/templates/etcd.sh.tftpl", {
    name          = "${var.name}-etcd-${count.index}"
    ip            = local.etcd_ips[count.index]
    cluster       = local.etcd_cluster
    cluster_token = var.name
    etcd_url      = local.etcd_url
  })

  root_block_device {
    volume_type = "gp3"
    volume_size = var.etcd_volume_size_gb
    encrypted   = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags        = merge(local.tags, { Name = "${var.name}-etcd-${count.index}" })
  volume_tags = local.tags

  lifecycle {
    ignore_changes = [ami, user_data]
  }
}
