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
// used, and decompression is capped, so hostile input costs at most the bytes
// it arrived in plus the cap.
package recordbatch
