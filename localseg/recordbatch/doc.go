// Package recordbatch reads, validates, patches and builds Kafka record
// batches (magic v2), the one byte format Shale keeps end to end.
//
// # Format (frozen: it is Kafka's wire and log format)
//
// All integers are big endian. Offsets are from the start of the batch.
//
//	off len field
//	  0   8 baseOffset            first offset of the batch (assigned by the leader)
//	  8   4 batchLength           bytes that follow this field (total size - 12)
//	 12   4 partitionLeaderEpoch  leader epoch that appended the batch
//	 16   1 magic                 always 2
//	 17   4 crc                   CRC-32C (Castagnoli) of bytes 21..end
//	 21   2 attributes            bits 0-2 codec, 3 timestamp type, 4 transactional,
//	                              5 control, 6 delete horizon
//	 23   4 lastOffsetDelta
//	 27   8 baseTimestamp
//	 35   8 maxTimestamp
//	 43   8 producerId
//	 51   2 producerEpoch
//	 53   4 baseSequence
//	 57   4 recordCount
//	 61     records (compressed as a whole when the codec is not none)
//
// baseOffset, batchLength and partitionLeaderEpoch sit outside the CRC, so a
// broker assigns offsets and stamps the leader epoch in place without
// touching the checksum. Each record is
//
//	length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
//	keyLength varint (-1 = null), key, valueLength varint (-1 = null), value,
//	headerCount varint, headers (keyLength varint, key, valueLength varint, value)
//
// Every length read here is checked against the bytes left before it is
// used.
//
// # Looking inside batches
//
// ValidateProduce and WalkRecords step over records without building them
// (varints decoded inline, keys, values and headers skipped), so an
// uncompressed batch is checked without allocating. A compressed body is
// decompressed as a stream through a 64 KiB window by pooled decoders
// (gzip, snappy raw and xerial-framed, lz4, zstd), never whole; its output
// is capped (MaxDecompressedFor: 64 MiB, or max.message.bytes up to 256
// MiB), zstd windows are capped at 8 MiB, and the record count the header
// claims must be the count found, with nothing after the last record. What
// the decoders may hold is taken first from a Budget the broker shares
// between every reader of batches, so concurrent bombs cost at most the
// budget. Records builds records whole for readers that need keys and
// values, decompressing into one buffer charged to the budget.
//
// # Recompression
//
// Recompress applies a topic's compression.type to a producer's batch: the
// payload is decompressed as a stream and compressed again with the
// topic's codec and level (LevelRange gives Kafka's), by pooled encoders;
// the header is the producer's but for the codec bits, the length and the
// CRC, and no record is parsed. It writes what every client reads: gzip,
// one raw snappy block, an lz4 frame of 64 KiB blocks, zstd frames with a
// window of at most 1 MiB. The decoder's and encoder's working memory and
// the new batch are taken from the Budget before they are allocated.
package recordbatch
