/*
 * amd64 (sys/amd64/include/_types.h, pcb.h, frame.h, segments.h): the
 * context a switched-out thread resumes from and what the CPU and calltrap
 * push on a trap.
 */
typedef int64_t			register_t;
typedef uint64_t		vm_paddr_t;

/* sys/amd64/include/segments.h */
struct region_descriptor {
	uint64_t rd_limit:16;		/* segment extent */
	uint64_t rd_base:64 __attribute__((packed));	/* base address  */
} __attribute__((packed));

/* sys/amd64/include/pcb.h */
struct pcb {
	register_t	pcb_r15;
	register_t	pcb_r14;
	register_t	pcb_r13;
	register_t	pcb_r12;
	register_t	pcb_rbp;
	register_t	pcb_rsp;
	register_t	pcb_rbx;
	register_t	pcb_rip;
	register_t	pcb_fsbase;
	register_t	pcb_gsbase;
	register_t	pcb_kgsbase;
	register_t	pcb_cr0;
	register_t	pcb_cr2;
	register_t	pcb_cr3;
	register_t	pcb_cr4;
	register_t	pcb_dr0;
	register_t	pcb_dr1;
	register_t	pcb_dr2;
	register_t	pcb_dr3;
	register_t	pcb_dr6;
	register_t	pcb_dr7;
	struct region_descriptor pcb_gdt;
	struct region_descriptor pcb_idt;
	struct region_descriptor pcb_ldt;
	uint16_t	pcb_tr;
	u_int		pcb_flags;
	uint16_t	pcb_initial_fpucw;
	caddr_t		pcb_onfault;
	uint64_t	pcb_saved_ucr3;
	uint64_t	pcb_efer;
	uint64_t	pcb_star;
	uint64_t	pcb_lstar;
	uint64_t	pcb_cstar;
	uint64_t	pcb_sfmask;
	struct savefpu	*pcb_save;
	uint64_t	pcb_pad[22];	/* to the dump's pcb_size */
} __attribute__((aligned(64)));
CHECK(pcb, pcb_r15, 0x00);
CHECK(pcb, pcb_r14, 0x08);
CHECK(pcb, pcb_r13, 0x10);
CHECK(pcb, pcb_r12, 0x18);
CHECK(pcb, pcb_rbp, 0x20);
CHECK(pcb, pcb_rsp, 0x28);
CHECK(pcb, pcb_rbx, 0x30);
CHECK(pcb, pcb_rip, 0x38);
CHECK_SIZE(pcb, 0x1c0);

/* sys/amd64/include/frame.h */
struct trapframe {
	register_t	tf_rdi;
	register_t	tf_rsi;
	register_t	tf_rdx;
	register_t	tf_rcx;
	register_t	tf_r8;
	register_t	tf_r9;
	register_t	tf_rax;
	register_t	tf_rbx;
	register_t	tf_rbp;
	register_t	tf_r10;
	register_t	tf_r11;
	register_t	tf_r12;
	register_t	tf_r13;
	register_t	tf_r14;
	register_t	tf_r15;
	uint32_t	tf_trapno;
	uint16_t	tf_fs;
	uint16_t	tf_gs;
	register_t	tf_addr;
	uint32_t	tf_flags;
	uint16_t	tf_es;
	uint16_t	tf_ds;
	/* below portion defined in hardware */
	register_t	tf_err;
	register_t	tf_rip;
	register_t	tf_cs;
	register_t	tf_rflags;
	/* the amd64 frame always has the stack registers */
	register_t	tf_rsp;
	register_t	tf_ss;
};
CHECK(trapframe, tf_rdi, 0);
CHECK(trapframe, tf_r15, 112);
CHECK(trapframe, tf_rip, 152);
CHECK(trapframe, tf_cs, 160);
CHECK(trapframe, tf_rflags, 168);
CHECK(trapframe, tf_rsp, 176);
CHECK(trapframe, tf_ss, 184);
CHECK_SIZE(trapframe, 192);
