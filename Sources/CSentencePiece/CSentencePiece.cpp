// The C shim over libsentencepiece (see include/CSentencePiece.h for the contract).
#include "CSentencePiece.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct csp_processor {
    sentencepiece::SentencePieceProcessor sp;
};

static void csp_write_error(char *error, size_t capacity, const std::string &message) {
    if (error == nullptr || capacity == 0) return;
    size_t n = message.size() < capacity - 1 ? message.size() : capacity - 1;
    std::memcpy(error, message.data(), n);
    error[n] = '\0';
}

extern "C" {

csp_processor *csp_load_from_bytes(const void *bytes, size_t length, char *error, size_t error_capacity) {
    csp_processor *p = new (std::nothrow) csp_processor();
    if (p == nullptr) {
        csp_write_error(error, error_capacity, "out of memory");
        return nullptr;
    }
    try {
        const auto status = p->sp.LoadFromSerializedProto(
            std::string_view(static_cast<const char *>(bytes), length));
        if (!status.ok()) {
            csp_write_error(error, error_capacity, status.ToString());
            delete p;
            return nullptr;
        }
    } catch (const std::exception &e) {
        csp_write_error(error, error_capacity, e.what());
        delete p;
        return nullptr;
    } catch (...) {
        csp_write_error(error, error_capacity, "unknown C++ exception while loading");
        delete p;
        return nullptr;
    }
    return p;
}

void csp_free(csp_processor *processor) { delete processor; }

void csp_free_buffer(void *buffer) { std::free(buffer); }

int csp_encode(const csp_processor *processor, const char *text, size_t length,
               int32_t **ids, size_t *count, char *error, size_t error_capacity) {
    *ids = nullptr;
    *count = 0;
    try {
        std::vector<int> out;
        const auto status = processor->sp.Encode(std::string_view(text, length), &out);
        if (!status.ok()) {
            csp_write_error(error, error_capacity, status.ToString());
            return 1;
        }
        if (!out.empty()) {
            int32_t *buffer = static_cast<int32_t *>(std::malloc(out.size() * sizeof(int32_t)));
            if (buffer == nullptr) {
                csp_write_error(error, error_capacity, "out of memory");
                return 1;
            }
            for (size_t i = 0; i < out.size(); ++i) buffer[i] = static_cast<int32_t>(out[i]);
            *ids = buffer;
            *count = out.size();
        }
        return 0;
    } catch (const std::exception &e) {
        csp_write_error(error, error_capacity, e.what());
        return 1;
    } catch (...) {
        csp_write_error(error, error_capacity, "unknown C++ exception while encoding");
        return 1;
    }
}

int csp_decode(const csp_processor *processor, const int32_t *ids, size_t count,
               char **text, size_t *length, char *error, size_t error_capacity) {
    *text = nullptr;
    *length = 0;
    try {
        std::vector<int> in(ids, ids + count);
        std::string out;
        const auto status = processor->sp.Decode(in, &out);
        if (!status.ok()) {
            csp_write_error(error, error_capacity, status.ToString());
            return 1;
        }
        char *buffer = static_cast<char *>(std::malloc(out.size() + 1));
        if (buffer == nullptr) {
            csp_write_error(error, error_capacity, "out of memory");
            return 1;
        }
        std::memcpy(buffer, out.data(), out.size());
        buffer[out.size()] = '\0';
        *text = buffer;
        *length = out.size();
        return 0;
    } catch (const std::exception &e) {
        csp_write_error(error, error_capacity, e.what());
        return 1;
    } catch (...) {
        csp_write_error(error, error_capacity, "unknown C++ exception while decoding");
        return 1;
    }
}

int32_t csp_piece_size(const csp_processor *processor) { return processor->sp.GetPieceSize(); }

int32_t csp_piece_to_id(const csp_processor *processor, const char *piece, size_t length) {
    return processor->sp.PieceToId(std::string_view(piece, length));
}

const char *csp_id_to_piece(const csp_processor *processor, int32_t id, size_t *length) {
    const std::string &piece = processor->sp.IdToPiece(id);
    *length = piece.size();
    return piece.data();
}

int32_t csp_unk_id(const csp_processor *processor) { return processor->sp.unk_id(); }
int32_t csp_bos_id(const csp_processor *processor) { return processor->sp.bos_id(); }
int32_t csp_eos_id(const csp_processor *processor) { return processor->sp.eos_id(); }
int32_t csp_pad_id(const csp_processor *processor) { return processor->sp.pad_id(); }

int csp_is_control(const csp_processor *processor, int32_t id) { return processor->sp.IsControl(id) ? 1 : 0; }
int csp_is_unknown(const csp_processor *processor, int32_t id) { return processor->sp.IsUnknown(id) ? 1 : 0; }
int csp_is_byte(const csp_processor *processor, int32_t id) { return processor->sp.IsByte(id) ? 1 : 0; }
int csp_is_unused(const csp_processor *processor, int32_t id) { return processor->sp.IsUnused(id) ? 1 : 0; }

}  // extern "C"
