# The brokers' role: the bucket's prefix and nothing else. Shale lists,
# reads, writes and deletes objects under PREFIX/ (multipart uploads for
# large segments, aborted when a put fails). s3:ListBucket is also what
# makes S3 answer 404 rather than 403 for a missing key, which Shale relies
# on; S3 evaluates the s3:prefix condition with the key for that decision.

data "aws_partition" "current" {}

locals {
  ec2_assume_role = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  ssm_policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_role" "broker" {
  name_prefix        = "${var.name}-broker-"
  assume_role_policy = local.ec2_assume_role
  tags               = local.tags
}

resource "aws_iam_role_policy" "broker_bucket" {
  name = "shale-bucket-prefix"
  role = aws_iam_role.broker.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid       = "ListThePrefix"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = aws_s3_bucket.this.arn
        Condition = { StringLike = { "s3:prefix" = ["${var.object_prefix}/*"] } }
      },
      {
        Sid    = "ObjectsUnderThePrefix"
        Effect = "Allow"
        Action = [
          "s3:GetObject",
          "s3:PutObject",
          "s3:DeleteObject",
          "s3:AbortMultipartUpload",
          "s3:ListMultipartUploadParts",
        ]
        Resource = "${aws_s3_bucket.this.arn}/${var.object_prefix}/*"
      },
      ], var.kms_key_arn == "" ? [] : [
      {
        Sid      = "TheBucketKey"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource = var.kms_key_arn
      },
    ])
  })
}

resource "aws_iam_role_policy_attachment" "broker_ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.broker.name
  policy_arn = local.ssm_policy_arn
}

resource "aws_iam_instance_profile" "broker" {
  name_prefix = "${var.name}-broker-"
  role        = aws_iam_role.broker.name
  tags        = local.tags
}

# The etcd members need no AWS access; they get a role only for Session
# Manager.
resource "aws_iam_role" "etcd" {
  count              = var.enable_ssm ? 1 : 0
  name_prefix        = "${var.name}-etcd-"
  assume_role_policy = local.ec2_assume_role
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "etcd_ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.etcd[0].name
  policy_arn = local.ssm_policy_arn
}

resource "aws_iam_instance_profile" "etcd" {
  count       = var.enable_ssm ? 1 : 0
  name_prefix = "${var.name}-etcd-"
  role        = aws_iam_role.etcd[0].name
  tags        = local.tags
}
