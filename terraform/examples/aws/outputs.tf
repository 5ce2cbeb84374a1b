output "bootstrap_servers" {
  description = "Kafka bootstrap address (from inside the VPC)."
  value       = module.shale.bootstrap_servers
}

output "broker_addresses" {
  description = "Each broker's advertised address."
  value       = module.shale.broker_addresses
}

output "broker_http_addresses" {
  description = "Each broker's HTTP address (/metrics, /healthz, /readyz, /v1/tier): shale tier status --http, Prometheus targets."
  value       = module.shale.broker_http_addresses
}

output "etcd_endpoints" {
  description = "etcd client endpoints."
  value       = module.shale.etcd_endpoints
}

output "bucket" {
  description = "The tiered-storage bucket."
  value       = module.shale.bucket
}

output "object_store_url" {
  description = "The brokers' --object-store URL."
  value       = module.shale.object_store_url
}
