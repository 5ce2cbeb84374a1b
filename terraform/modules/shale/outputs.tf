output "bootstrap_servers" {
  description = "Kafka bootstrap address for clients (the internal NLB)."
  value       = "${aws_lb.this.dns_name}:${var.kafka_port}"
}

output "broker_addresses" {
  description = "Each broker's advertised address, by broker id; clients reach the partition leaders there."
  value       = [for ip in local.broker_ips : "${ip}:${var.kafka_port}"]
}

output "broker_http_addresses" {
  description = "Each broker's HTTP address (/metrics, /healthz, /readyz)."
  value       = [for ip in local.broker_ips : "${ip}:${var.http_port}"]
}

output "etcd_endpoints" {
  description = "The etcd members' client endpoints (shale broker --etcd)."
  value       = local.etcd_endpoints
}

output "bucket" {
  description = "The S3 bucket of the tiered history."
  value       = aws_s3_bucket.this.bucket
}

output "object_store_url" {
  description = "The brokers' --object-store URL."
  value       = local.object_store_url
}

output "broker_role_arn" {
  description = "The brokers' IAM role (the bucket prefix and nothing else)."
  value       = aws_iam_role.broker.arn
}

output "security_group_ids" {
  description = "Security groups of the NLB, the brokers and the etcd members."
  value = {
    nlb    = aws_security_group.nlb.id
    broker = aws_security_group.broker.id
    etcd   = aws_security_group.etcd.id
  }
}
