variable "name" {
  description = "Name of the cluster: prefix of every resource name, and the etcd key prefix (shale broker --cluster)."
  type        = string
  default     = "shale"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}$", var.name))
    error_message = "name: lower-case letters, digits and dashes, at most 31 characters."
  }
}

variable "vpc_id" {
  description = "VPC the cluster runs in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone (three for a cluster that survives the loss of a zone). etcd node i and broker i go to subnet i modulo the count; the NLB spans them all."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids: at least one subnet (three, in three zones, for a zone-redundant cluster)."
  }
}

variable "allowed_cidrs" {
  description = "Networks whose Kafka clients may connect (the NLB's bootstrap port and each broker's advertised address)."
  type        = list(string)
}

variable "monitoring_cidrs" {
  description = "Networks allowed on the brokers' HTTP port (/metrics, /healthz, /readyz, and /v1/tier, which shale tier status reads at the address each broker advertises)."
  type        = list(string)
  default     = []
}

variable "shale_binary_url" {
  description = "URL of the shale binary (linux, the architecture of the instance types) that the instances download at boot."
  type        = string
}

variable "shale_binary_sha256" {
  description = "SHA-256 of the shale binary; when set, a download that does not match stops the boot script."
  type        = string
  default     = ""
}

variable "architecture" {
  description = "CPU architecture of every instance type: x86_64 or arm64 (it picks the AMI and the etcd download)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture: x86_64 or arm64."
  }
}

variable "ami_id" {
  description = "AMI of every instance; empty means the latest Amazon Linux 2023 for the architecture (read from SSM). The boot scripts need bash, curl, tar, systemd and mkfs.xfs."
  type        = string
  default     = ""
}

variable "key_name" {
  description = "EC2 key pair for SSH (no SSH port is opened by this module); null for none."
  type        = string
  default     = null
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to the instances' roles, for Session Manager shells."
  type        = bool
  default     = false
}

# The bucket.

variable "bucket_name" {
  description = "Name of the S3 bucket for tiered storage; empty lets AWS pick a unique name starting with NAME-tier-."
  type        = string
  default     = ""
}

variable "object_prefix" {
  description = "Key prefix of every object Shale writes (s3://BUCKET/PREFIX); the brokers' role reaches nothing outside it."
  type        = string
  default     = "shale"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.object_prefix))
    error_message = "object_prefix: one or more path segments without leading or trailing slashes."
  }
}

variable "kms_key_arn" {
  description = "KMS key for the bucket's default encryption (SSE-KMS, with an S3 bucket key); empty means SSE-S3 (AES-256)."
  type        = string
  default     = ""
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which an unfinished multipart upload (a broker that died mid-upload) is aborted and its parts deleted."
  type        = number
  default     = 1
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket with every object in it (the whole history)."
  type        = bool
  default     = false
}

# etcd.

variable "etcd_count" {
  description = "etcd members: 3 (one per zone) or 5."
  type        = number
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.etcd_count)
    error_message = "etcd_count: 1, 3 or 5."
  }
}

variable "etcd_instance_type" {
  description = "Instance type of the etcd members."
  type        = string
  default     = "t3.medium"
}

variable "etcd_volume_size_gb" {
  description = "Size of each etcd member's root volume (gp3), which holds its data directory."
  type        = number
  default     = 20
}

variable "etcd_version" {
  description = "etcd release the etcd members download (3.5 or later)."
  type        = string
  default     = "v3.5.17"
}

variable "etcd_download_url" {
  description = "URL of the etcd release tarball; empty means the etcd project's GitHub release of etcd_version for the architecture."
  type        = string
  default     = ""
}

variable "etcd_host_number" {
  description = "First host number (cidrhost) of the etcd members' fixed private addresses in their subnets: member i gets host etcd_host_number + i / len(subnet_ids). The addresses must be free."
  type        = number
  default     = 10
}

# Brokers.

variable "broker_count" {
  description = "Brokers, spread round-robin over the subnets' zones."
  type        = number
  default     = 3

  validation {
    condition     = var.broker_count >= 1
    error_message = "broker_count: at least 1."
  }
}

variable "broker_instance_type" {
  description = "Instance type of the brokers. With hot_tier = \"instance-store\" it must have NVMe instance storage (i4i, i4g, m6id, r6id, ...)."
  type        = string
  default     = "m6i.large"
}

variable "broker_host_number" {
  description = "First host number (cidrhost) of the brokers' fixed private addresses: broker i gets host broker_host_number + i / len(subnet_ids). The addresses must be free."
  type        = number
  default     = 20
}

variable "hot_tier" {
  description = "Where the brokers keep their local log: \"ebs\" (a gp3 volume per broker that outlives the instance) or \"instance-store\" (the instance's first NVMe instance-store disk: fastest, lost when the instance stops; replication and the bucket hold the data)."
  type        = string
  default     = "ebs"

  validation {
    condition     = contains(["ebs", "instance-store"], var.hot_tier)
    error_message = "hot_tier: \"ebs\" or \"instance-store\"."
  }
}

variable "broker_volume_size_gb" {
  description = "Size of each broker's gp3 log volume (hot_tier = \"ebs\"): the local retention (local.retention.ms/bytes) of its partitions, plus headroom."
  type        = number
  default     = 500
}

variable "broker_volume_iops" {
  description = "Provisioned IOPS of each broker's gp3 log volume (3000 to 16000)."
  type        = number
  default     = 3000
}

variable "broker_volume_throughput" {
  description = "Provisioned throughput of each broker's gp3 log volume, MiB/s (125 to 1000)."
  type        = number
  default     = 250
}

variable "broker_root_volume_size_gb" {
  description = "Size of each broker's root volume (gp3)."
  type        = number
  default     = 20
}

variable "kafka_port" {
  description = "Kafka port of the brokers and of the NLB's bootstrap listener."
  type        = number
  default     = 9092
}

variable "http_port" {
  description = "HTTP port of the brokers (/metrics, /healthz, /readyz)."
  type        = number
  default     = 9644
}

variable "default_replication_factor" {
  description = "Replicas of auto-created topics (shale broker --default-replication-factor); capped at broker_count."
  type        = number
  default     = 3
}

variable "max_connections" {
  description = "Client connections each broker keeps open at once; more are closed as they are accepted (shale broker --max-connections, max.connections)."
  type        = number
  default     = 10000

  validation {
    condition     = var.max_connections >= 1 && floor(var.max_connections) == var.max_connections
    error_message = "max_connections: a whole number, at least 1."
  }
}

variable "max_connections_per_ip" {
  description = "Client connections each broker keeps open at once from one IP address, 0 for no limit (shale broker --max-connections-per-ip, max.connections.per.ip). Clients behind the NLB keep their own addresses (client IP preservation)."
  type        = number
  default     = 0

  validation {
    condition     = var.max_connections_per_ip >= 0 && floor(var.max_connections_per_ip) == var.max_connections_per_ip
    error_message = "max_connections_per_ip: a whole number, 0 (no limit) or more."
  }
}

variable "replica_selector" {
  description = "Where consumers that name their zone (client.rack) read from: rack-aware (an in-sync replica in their zone, which saves cross-zone traffic) or leader (shale broker --replica-selector, replica.selector.class). Each broker's rack is its availability zone."
  type        = string
  default     = "rack-aware"

  validation {
    condition     = contains(["rack-aware", "leader"], var.replica_selector)
    error_message = "replica_selector: rack-aware or leader."
  }
}

variable "broker_extra_args" {
  description = "More shale broker arguments, one word each, e.g. [\"--topic-default\", \"log.retention.ms=-1\"]."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.broker_extra_args : can(regex("^[^\\s%'\"\\\\]+$", a))])
    error_message = "broker_extra_args: each argument one word, without spaces, quotes, backslashes or % (they go into a systemd ExecStart line)."
  }
}

# Client authentication (SASL) and TLS on the Kafka listener.

variable "sasl_mechanisms" {
  description = "SASL mechanisms clients must authenticate with (shale broker --sasl-mechanisms, sasl.enabled.mechanisms), of PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; empty: nobody authenticates. Users are SCRAM credentials the cluster keeps in etcd (shale user set); PLAIN checks passwords against them and, without tls_cert_pem, sends them in clear."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.sasl_mechanisms : contains(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], m)])
    error_message = "sasl_mechanisms: each of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512."
  }
}

variable "sasl_bootstrap_user" {
  description = "The cluster's first user (shale broker --sasl-bootstrap-user), given SCRAM-SHA-256 and SCRAM-SHA-512 credentials when a broker starts unless it has credentials already; empty for none. Its password is sasl_bootstrap_password."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[^\\s%$'\"\\\\]*$", var.sasl_bootstrap_user))
    error_message = "sasl_bootstrap_user: one word, without spaces, quotes, backslashes, $ or % (it goes into a systemd ExecStart line)."
  }
}

variable "sasl_bootstrap_password" {
  description = "Password of sasl_bootstrap_user, required with it. Each broker gets it in /etc/shale/shale.env (owner root, mode 0600), which the shale unit reads with EnvironmentFile= into SHALE_SASL_BOOTSTRAP_PASSWORD: it is on no command line. It is also in the instances' user data (readable through ec2:DescribeInstanceAttribute and, on the instance, the metadata service) and in the Terraform state; change it with shale user set once the cluster runs."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = !can(regex("[\\r\\n\\x00]", var.sasl_bootstrap_password))
    error_message = "sasl_bootstrap_password: one line (no newline, carriage return or NUL)."
  }
}

variable "tls_cert_pem" {
  description = "PEM certificate (chain) of the brokers' Kafka listener (shale broker --tls-cert), for clients and the other brokers alike (SSL, or SASL_SSL with sasl_mechanisms); empty: plain TCP. Every broker presents this one certificate and advertises its private IP address (output broker_addresses), never a DNS name, so the certificate must carry every broker's IP as an IP SAN: broker i's is cidrhost(CIDR of subnet i % len(subnet_ids), broker_host_number + floor(i / len(subnet_ids))), e.g. 10.42.0.20, 10.42.16.20 and 10.42.32.20 for the example's defaults; a broker whose IP it lacks does not start. Clients that bootstrap through the NLB verify the name they dial too: give the NLB a DNS name of yours (a Route 53 alias) and put it in the certificate, or bootstrap from broker_addresses. The certificate is read at start and kept in the user data, which later changes do not reach: replace the brokers one at a time to roll out a new one. The user data (the boot script, about 4 KB, with the certificate chain, key and CA in base64, a third larger than their PEM) must fit EC2's 16 KB: prefer ECDSA keys and short chains."
  type        = string
  default     = ""

  validation {
    condition     = var.tls_cert_pem == "" || can(regex("-----BEGIN CERTIFICATE-----", var.tls_cert_pem))
    error_message = "tls_cert_pem: a PEM certificate (-----BEGIN CERTIFICATE-----), or empty."
  }
}

variable "tls_key_pem" {
  description = "PEM private key of tls_cert_pem (shale broker --tls-key), required with it; written to /etc/shale/tls/key.pem (owner shale, mode 0600) on each broker. It is also in the instances' user data and in the Terraform state."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.tls_key_pem == "" || can(regex("-----BEGIN [A-Z ]*PRIVATE KEY-----", var.tls_key_pem))
    error_message = "tls_key_pem: a PEM private key (-----BEGIN ... PRIVATE KEY-----), or empty."
  }
}

variable "tls_ca_pem" {
  description = "PEM CA certificates (shale broker --tls-ca) that verify the other brokers' certificates and, with tls_client_auth, clients'; empty: the system's CAs. Only with tls_cert_pem."
  type        = string
  default     = ""

  validation {
    condition     = var.tls_ca_pem == "" || can(regex("-----BEGIN CERTIFICATE-----", var.tls_ca_pem))
    error_message = "tls_ca_pem: PEM certificates (-----BEGIN CERTIFICATE-----), or empty."
  }
}

variable "tls_client_auth" {
  description = "Client certificates the TLS listener asks for (shale broker --tls-client-auth, ssl.client.auth): none, requested (verified when given) or required; the last two need tls_ca_pem, and a certificate whose extended key usage allows clientAuth too, since the brokers present it to each other."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "requested", "required"], var.tls_client_auth)
    error_message = "tls_client_auth: none, requested or required."
  }
}

# Authorization (ACLs).

variable "acls_enabled" {
  description = "Enforce ACLs (shale broker --acls): a client may do only what ACLs allow its principal, User:NAME for its SASL user or its client certificate's subject, User:ANONYMOUS without either (so without sasl_mechanisms or tls_client_auth every client is User:ANONYMOUS). Super users, sasl_bootstrap_user among them, may do anything and grant the ACLs (shale acl add, or kafka-acls.sh --bootstrap-server); the ACLs live in etcd."
  type        = bool
  default     = false
}

variable "super_users" {
  description = "Principals that may do anything with acls_enabled (shale broker --super-users, super.users), e.g. [\"User:admin\", \"User:ops\"]; sasl_bootstrap_user is one without being named here."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.super_users : can(regex("^[^\\s%$'\"\\\\;:]+:[^\\s%$'\"\\\\;]+$", p))])
    error_message = "super_users: each a principal, Type:Name as User:admin, without spaces, quotes, backslashes, semicolons, $ or % (they go into a systemd ExecStart line)."
  }
}

variable "allow_everyone_if_no_acl_found" {
  description = "With acls_enabled, a resource that no ACL names is open to every client (shale broker --allow-everyone-if-no-acl-found, allow.everyone.if.no.acl.found); default: closed to all but super users."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
