/* corral: preloaded into Claude Code (LD_PRELOAD) to make it non-dumpable.
 *
 * The agent's tools run as Claude Code's own uid, so without this they could open
 * /proc/<claude>/fd/1 and write forged control messages to the host, or read its environ and
 * memory. A non-dumpable process's /proc entries belong to root and refuse ptrace-mode access
 * to anyone without CAP_SYS_PTRACE, which nobody in the sandbox has. An execve of a readable
 * binary resets the flag, so it has to be set inside the final process: here, before main().
 * LD_PRELOAD is removed again so the tools Claude Code spawns do not inherit it.
 */
#include <stdlib.h>
#include <sys/prctl.h>

__attribute__((constructor)) static void corral_nodump(void) {
    unsetenv("LD_PRELOAD");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) {
        abort(); /* fail closed: never run Claude Code dumpable */
    }
}
