/*
 * arm, armv7 (sys/arm/include/_types.h, pcb.h, frame.h, vfp.h): cpu_switch
 * and savectx store {r4-r12, sp, lr, pc} in pcb_regs, pc being inside
 * themselves; exception.S pushes struct trapframe on the SVC stack.
 */
typedef int32_t			register_t;
typedef uint32_t		vm_paddr_t;

/* sys/arm/include/frame.h */
struct trapframe {
	register_t tf_spsr;
	register_t tf_r0;
	register_t tf_r1;
	register_t tf_r2;
	register_t tf_r3;
	register_t tf_r4;
	register_t tf_r5;
	register_t tf_r6;
	register_t tf_r7;
	register_t tf_r8;
	register_t tf_r9;
	register_t tf_r10;
	register_t tf_r11;
	register_t tf_r12;
	register_t tf_usr_sp;
	register_t tf_usr_lr;
	register_t tf_svc_sp;
	register_t tf_svc_lr;
	register_t tf_pc;
	register_t tf_pad;
};

struct switchframe {
	register_t sf_r4;
	register_t sf_r5;
	register_t sf_r6;
	register_t sf_r7;
	register_t sf_r8;
	register_t sf_r9;
	register_t sf_r10;
	register_t sf_r11;
	register_t sf_r12;
	register_t sf_sp;
	register_t sf_lr;
	register_t sf_pc;
	register_t sf_tpidrurw;
	register_t sf_spare0;
};

/* sys/arm/include/vfp.h */
struct vfp_state {
	uint64_t reg[32];
	uint32_t fpscr;
	uint32_t fpexec;
	uint32_t fpinst;
	uint32_t fpinst2;
};

/* sys/arm/include/pcb.h */
struct pcb {
	struct switchframe pcb_regs;	/* CPU state */
	u_int	pcb_flags;
	caddr_t	pcb_onfault;		/* On fault handler */
	vm_offset_t	pcb_pagedir;	/* TTB0 value */
	uint32_t *pcb_pl1vec;		/* PTR to vector_base L1 entry*/
	uint32_t pcb_l1vec;		/* Value to stuff on ctx sw */
	u_int	pcb_dacr;		/* Domain Access Control Reg */
	struct vfp_state pcb_vfpstate;	/* VP/NEON state */
	u_int pcb_vfpcpu;		/* VP/NEON last cpu */
	struct vfp_state *pcb_vfpsaved;	/* VP/NEON state */
	int	pcb_fpflags;
} __attribute__((aligned(8)));
