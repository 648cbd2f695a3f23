/*
 * riscv (sys/riscv/include/_types.h, pcb.h, frame.h): savectx/cpu_switch
 * keep the return address in pcb_ra (the resume pc) and s0..s11 in pcb_s[].
 */
typedef int64_t			register_t;
typedef uint64_t		vm_paddr_t;

/* sys/riscv/include/pcb.h */
struct pcb {
	uint64_t	pcb_ra;		/* Return address */
	uint64_t	pcb_sp;		/* Stack pointer */
	uint64_t	pcb_gp;		/* Global pointer */
	uint64_t	pcb_tp;		/* Thread pointer */
	uint64_t	pcb_s[12];	/* Saved registers */
	uint64_t	pcb_x[32][2];	/* Floating point registers */
	uint64_t	pcb_fcsr;	/* Floating point control reg */
	uint64_t	pcb_fpflags;	/* Floating point flags */
	vm_offset_t	pcb_onfault;	/* Copyinout fault handler */
};

/* sys/riscv/include/frame.h */
struct trapframe {
	uint64_t tf_ra;
	uint64_t tf_sp;
	uint64_t tf_gp;
	uint64_t tf_tp;
	uint64_t tf_t[7];
	uint64_t tf_s[12];
	uint64_t tf_a[8];
	uint64_t tf_sepc;
	uint64_t tf_sstatus;
	uint64_t tf_stval;
	uint64_t tf_scause;
};
