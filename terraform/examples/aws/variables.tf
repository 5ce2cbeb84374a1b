variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the cluster."
  type        = string
  default     = "shale"
}

variable "vpc_cidr" {
  description = "CIDR of the example's VPC: three private subnets (brokers, etcd, NLB) and one public subnet (the NAT gateway) are cut from it."
  type        = string
  default     = "10.42.0.0/16"
}

variable "shale_binary_url" {
  description = "URL of a linux shale binary for the instances' architecture (e.g. `GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build ./cmd/shale`, uploaded where the instances can download it)."
  type        = string
}

variable "shale_binary_sha256" {
  description = "SHA-256 of that binary (sha256sum bin/shale); empty skips the check."
  type        = string
  default     = ""
}

variable "broker_count" {
  description = "Brokers."
  type        = number
  default     = 3
}

variable "broker_instance_type" {
  description = "Instance type of the brokers."
  type        = string
  default     = "m6i.large"
}

variable "hot_tier" {
  description = "\"ebs\" or \"instance-store\" (then pick an instance type with NVMe instance storage, e.g. i4i.large)."
  type        = string
  default     = "ebs"
}

variable "broker_volume_size_gb" {
  description = "Size of each broker's gp3 log volume."
  type        = number
  default     = 500
}

variable "etcd_instance_type" {
  description = "Instance type of the etcd members."
  type        = string
  default     = "t3.medium"
}

variable "allowed_cidrs" {
  description = "Networks allowed to reach Kafka; default: the VPC."
  type        = list(string)
  default     = []
}

variable "max_connections" {
  description = "Client connections each broker keeps open at once (shale broker --max-connections)."
  type        = number
  default     = 10000
}

variable "max_connections_per_ip" {
  description = "Client connections each broker keeps open at once from one IP address, 0 for no limit (shale broker --max-connections-per-ip)."
  type        = number
  default     = 0
}

variable "replica_selector" {
  description = "Where consumers that name their zone read from: rack-aware (an in-sync replica in their zone) or leader (shale broker --replica-selector)."
  type        = string
  default     = "rack-aware"
}

variable "sasl_mechanisms" {
  description = "SASL mechanisms clients must authenticate with, of PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (shale broker --sasl-mechanisms); empty: none."
  type        = list(string)
  default     = []
}

variable "sasl_bootstrap_user" {
  description = "The cluster's first SASL user (shale broker --sasl-bootstrap-user); empty for none."
  type        = string
  default     = ""
}

variable "sasl_bootstrap_password" {
  description = "Password of sasl_bootstrap_user: set it in the environment (TF_VAR_sasl_bootstrap_password), not in a file."
  type        = string
  default     = ""
  sensitive   = true
}

variable "acls_enabled" {
  description = "Enforce ACLs (shale broker --acls); sasl_bootstrap_user, a super user, grants them with shale acl add."
  type        = bool
  default     = false
}

variable "super_users" {
  description = "Principals that may do anything with acls_enabled, e.g. [\"User:ops\"] (shale broker --super-users)."
  type        = list(string)
  default     = []
}

variable "tls_cert_file" {
  description = "Path of the brokers' PEM certificate (chain); empty: no TLS. It must carry every broker's private IP as an IP SAN: with this example's defaults 10.42.0.20, 10.42.16.20 and 10.42.32.20 (broker i: host 20 + i / 3 of private subnet i % 3, the /20s from vpc_cidr)."
  type        = string
  default     = ""
}

variable "tls_key_file" {
  description = "Path of the PEM private key of tls_cert_file."
  type        = string
  default     = ""
}

variable "tls_ca_file" {
  description = "Path of PEM CA certificates that verify the brokers' certificates (and clients', with tls_client_auth); empty: the system's."
  type        = string
  default     = ""
}

variable "tls_client_auth" {
  description = "Client certificates the brokers ask for: none, requested or required (needs tls_ca_file)."
  type        = string
  default     = "none"
}
