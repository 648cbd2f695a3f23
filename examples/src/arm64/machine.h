/*
 * arm64 (sys/arm64/include/_types.h, pcb.h, frame.h), FreeBSD 14
 * (__FreeBSD_version >= 1400084): pcb_x[] holds x19..x29 and lr.
 */
typedef int64_t			register_t;
typedef uint64_t		vm_paddr_t;

#define	PCB_LR		(30 - 19)	/* pcb_x[] slot of x30 */

/* sys/arm64/include/pcb.h */
struct pcb {
	uint64_t	pcb_x[12];	/* x19..x29, lr */
	uint64_t	pcb_sp;
	uint64_t	pcb_tpidr_el0;
	uint64_t	pcb_tpidrro_el0;
	vm_offset_t	pcb_onfault;	/* Copyinout fault handler */
	u_int		pcb_flags;
	char		pcb_pad[0x2a0 - 0x84];	/* fpu state: to the dump's pcb_size */
};

/* sys/arm64/include/frame.h */
struct trapframe {
	uint64_t tf_sp;
	uint64_t tf_lr;
	uint64_t tf_elr;
	uint64_t tf_spsr;
	uint64_t tf_esr;
	uint64_t tf_far;
	uint64_t tf_x[30];
};
