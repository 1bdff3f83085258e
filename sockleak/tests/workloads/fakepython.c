// Looks like CPython 3.11 to a tool that reads its symbols (`_PyRuntime`, `Py_Version`,
// `PyCode_Type`), built as `python3.11`, but its memory is not what CPython's would be:
//   fakepython garbage   the thread state is where CPython 3.11 keeps it (bound to a pthread
//                        key, found through _PyRuntime), but its frames hold a word that is not
//                        a code object, a "code object" whose name is not a string, and a
//                        pointer to unmapped memory: a walk finds frames, none may be named.
//   fakepython mismatch  its code type has another size than CPython 3.11's: the layout does
//                        not match and must be refused.
// Commands on stdin: `leak N` (N sockets from leak_here, never closed), `exit`.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// PY_VERSION_HEX of 3.11.7.
const unsigned long Py_Version = 0x030b07f0;
// sizeof(_PyRuntimeState) of 3.11.
char _PyRuntime[166688] __attribute__((aligned(64)));

struct type {
    char head[24];
    const char *tp_name;
    long tp_basicsize;
    char rest[400];
};
struct type PyCode_Type = {{0}, "code", 184, {0}};

// Its code decodes to no thread-state key offset.
__attribute__((noinline)) void *PyGILState_GetThisThreadState(void) { return NULL; }

static char interp[64] __attribute__((aligned(8)));
static char tstate[256] __attribute__((aligned(8)));
static char cframe[16] __attribute__((aligned(8)));
static char frames[3][80] __attribute__((aligned(8)));
static char not_code[256] __attribute__((aligned(8)));
static char bad_code[256] __attribute__((aligned(8)));

#define AT(base, off, type) (*(type *)((char *)(base) + (off)))

static void garbage(void) {
    // The 3.11 layout: interpreters.head (+40), threads.head (+16), tstate->interp (+16),
    // ->thread_id (+152, pthread_self()), ->cframe (+56); _PyCFrame.current_frame (+8).
    AT(_PyRuntime, 40, void *) = interp;
    AT(interp, 16, void *) = tstate;
    AT(tstate, 16, void *) = interp;
    AT(tstate, 152, pthread_t) = pthread_self();
    AT(tstate, 56, void *) = cframe;
    AT(cframe, 8, void *) = frames[0];
    // The autoTSSkey (+592: initialized, key) and its slot.
    pthread_key_t key;
    pthread_key_create(&key, NULL);
    pthread_setspecific(key, tstate);
    AT(_PyRuntime, 592, int) = 1;
    AT(_PyRuntime, 596, int) = (int)key;
    // Frames: f_code (+32), previous (+48), prev_instr (+56), is_entry (+68).
    AT(not_code, 8, void *) = (void *)0x1234;          // ob_type: not &PyCode_Type
    AT(frames[0], 32, void *) = not_code;
    AT(frames[0], 48, void *) = frames[1];
    AT(bad_code, 8, void *) = &PyCode_Type;            // a code object's type ...
    AT(bad_code, 120, void *) = tstate;                // ... whose co_name is no str
    AT(bad_code, 128, void *) = tstate;                // (co_qualname)
    AT(bad_code, 112, void *) = tstate;                // (co_filename)
    AT(bad_code, 136, void *) = tstate;                // (co_linetable)
    AT(frames[1], 32, void *) = bad_code;
    AT(frames[1], 48, void *) = frames[2];
    AT(frames[2], 32, void *) = (void *)0x10;         // unmapped
    AT(frames[2], 68, char) = 1;
}

static int kept[65536];
static int nkept;

__attribute__((noinline)) int leak_here(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && nkept < 65536)
        kept[nkept++] = fd;
    return fd >= 0;
}

int main(int argc, char **argv) {
    char line[64];
    int n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "mismatch") == 0)
        PyCode_Type.tp_basicsize = 999;
    else
        garbage();
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "leak %d", &n) == 1) {
            int ok = 0;
            for (int i = 0; i < n; i++)
                ok += leak_here();
            printf("ok %d\n", ok);
        } else if (strncmp(line, "exit", 4) == 0) {
            return 0;
        }
    }
    return 0;
}
