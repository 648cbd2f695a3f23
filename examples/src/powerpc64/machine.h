/*
 * powerpc64 (sys/powerpc/include/_types.h, pcb.h, frame.h): savectx and
 * cpu_switch store r12..r31 in pcb_context[], then cr, sp, the TOC pointer
 * and lr (the resume pc); trap_subr64.S saves struct trapframe 48 bytes
 * above the stack pointer of the trap code that called powerpc_interrupt().
 */
typedef int64_t			register_t;
typedef uint64_t		vm_paddr_t;

#include "../powerpc/pcb.h"
