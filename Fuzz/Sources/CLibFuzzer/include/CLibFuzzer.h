#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, linked by -sanitize=fuzzer): parses the libFuzzer flags in
/// argv and runs `callback` on every input. SwiftPM names an executable's entry point
/// `<module>_main` and points `main` at it, so each harness's entry point calls this instead
/// of relying on libFuzzer's own main().
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
