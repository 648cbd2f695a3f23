/*
 * powerpc, 32-bit (sys/powerpc/include/_types.h, pcb.h, frame.h): as
 * powerpc64, with 4-byte registers and the trap frame 8 bytes above the
 * trap code's stack pointer (trap_subr32.S).
 */
typedef int32_t			register_t;
typedef uint64_t		vm_paddr_t;

#include "pcb.h"
