/// A minimal C interface over libsentencepiece's C++ `SentencePieceProcessor`.
///
/// Swift cannot import the C++ header directly (without C++ interop), so this shim exposes
/// exactly what the `Tokenize` target needs: load, encode to ids, decode ids, and vocabulary
/// queries. Only `Sources/Tokenize/SentencePieceTokenizer.swift` imports this module.
///
/// Memory rules: a processor returned by `csp_load*` is freed with `csp_free`; id and string
/// buffers returned through out-parameters are allocated with `malloc` and freed with
/// `csp_free_buffer`. Error messages are copied into a caller-provided buffer.
/// A loaded processor is immutable; its encode/decode/query functions are safe to call from
/// several threads at once (they only call `const` members of the C++ class).
#ifndef CSENTENCEPIECE_H
#define CSENTENCEPIECE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csp_processor csp_processor;

/// Loads a serialized ModelProto (`tokenizer.model` bytes). Returns NULL on failure and writes
/// a NUL-terminated message (truncated to `error_capacity`) into `error`.
csp_processor *csp_load_from_bytes(const void *bytes, size_t length, char *error, size_t error_capacity);

/// Frees a processor (NULL is allowed).
void csp_free(csp_processor *processor);

/// Frees a buffer returned by `csp_encode` or `csp_decode`.
void csp_free_buffer(void *buffer);

/// Encodes `length` bytes of UTF-8 text into ids. On success returns 0 and stores a malloc'ed
/// array in `*ids` (may be NULL when `*count` is 0). On failure returns non-zero and writes the
/// message into `error`.
int csp_encode(const csp_processor *processor, const char *text, size_t length,
               int32_t **ids, size_t *count, char *error, size_t error_capacity);

/// Decodes ids into UTF-8 text (control ids are dropped, byte pieces reassembled, exactly as
/// `SentencePieceProcessor::Decode`). On success returns 0 and stores a malloc'ed buffer in
/// `*text` (not NUL-terminated) and its length in `*length`.
int csp_decode(const csp_processor *processor, const int32_t *ids, size_t count,
               char **text, size_t *length, char *error, size_t error_capacity);

/// Number of pieces in the model.
int32_t csp_piece_size(const csp_processor *processor);

/// Id of a piece given as `length` UTF-8 bytes; the unknown id when the piece is not in the model.
int32_t csp_piece_to_id(const csp_processor *processor, const char *piece, size_t length);

/// The piece of `id` (must be in range); the pointer stays valid while the processor lives.
const char *csp_id_to_piece(const csp_processor *processor, int32_t id, size_t *length);

int32_t csp_unk_id(const csp_processor *processor);
/// Negative when the model has no such token.
int32_t csp_bos_id(const csp_processor *processor);
int32_t csp_eos_id(const csp_processor *processor);
int32_t csp_pad_id(const csp_processor *processor);

int csp_is_control(const csp_processor *processor, int32_t id);
int csp_is_unknown(const csp_processor *processor, int32_t id);
int csp_is_byte(const csp_processor *processor, int32_t id);
int csp_is_unused(const csp_processor *processor, int32_t id);

#ifdef __cplusplus
}
#endif

#endif
