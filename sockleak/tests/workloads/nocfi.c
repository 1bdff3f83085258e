// A program with a function that has no CFI (hand-written assembly without .cfi directives,
// keeping a frame pointer, as some assembly does): a stack through it cannot be walked with
// the unwind tables. Commands: `cfi N` (N sockets leaked from C code only), `nocfi N` (N
// sockets leaked through the assembly), `exit`.
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static volatile int sink;

__attribute__((noinline, used)) int open_tcp(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sink += fd;
    return fd >= 0;
}

int asm_open(void);
__asm__(".text\n"
        ".globl asm_open\n"
        ".type asm_open, @function\n"
        "asm_open:\n"
        "  push %rbp\n"
        "  mov %rsp, %rbp\n"
        "  call open_tcp\n"
        "  pop %rbp\n"
        "  ret\n"
        ".size asm_open, .-asm_open\n");

__attribute__((noinline)) int through_asm(int n) { int ok = 0; for (int i = 0; i < n; i++) ok += asm_open(); sink += ok; return ok; }
__attribute__((noinline)) int direct(int n) { int ok = 0; for (int i = 0; i < n; i++) ok += open_tcp(); sink += ok; return ok; }

int main(void) {
    char line[64];
    int n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "nocfi %d", &n) == 1) {
            printf("ok %d\n", through_asm(n));
        } else if (sscanf(line, "cfi %d", &n) == 1) {
            printf("ok %d\n", direct(n));
        } else if (strncmp(line, "exit", 4) == 0) {
            return 0;
        }
    }
    return 0;
}
