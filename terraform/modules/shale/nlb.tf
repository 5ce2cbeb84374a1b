# An internal NLB whose one listener is the clients' bootstrap address:
# any healthy broker answers the first Metadata request, which names every
# broker at its advertised private address. Per-broker listeners (broker i
# advertising NLB:port+i) were not chosen: Shale has one listener, so the
# brokers' replication traffic would go through the NLB as well, and a
# broker reaching itself through an NLB that preserves client addresses
# does not connect.

resource "aws_lb" "this" {
  name_prefix                      = substr(var.name, 0, 6)
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
}

resource "aws_lb_target_group" "kafka" {
  name_prefix = substr(var.name, 0, 6)
  port        = var.kafka_port
  protocol    = "TCP"
  target_type = "instance"
  vpc_id      = var.vpc_id
  tags        = local.tags

  health_check {
    protocol            = "HTTP"
    port                = tostring(var.http_port)
    path                = "/readyz"
    healthy_threshold   = 2
    unhealthy_threshold = 2
    interval            = 10
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_target_group_attachment" "kafka" {
  count            = var.broker_count
  target_group_arn = aws_lb_target_group.kafka.arn
  target_id        = aws_instance.broker[count.index].id
  port             = var.kafka_port
}

resource "aws_lb_listener" "kafka" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.kafka_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kafka.arn
  }
}
