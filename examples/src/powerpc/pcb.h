/*
 * sys/powerpc/include/pcb.h and frame.h (shared by powerpc and powerpc64).
 */
typedef int jmp_buf[1];

struct pcb {
	register_t	pcb_context[20];	/* non-volatile r12-r31 */
	register_t	pcb_cr;			/* Condition register */
	register_t	pcb_sp;			/* stack pointer */
	register_t	pcb_toc;		/* toc pointer */
	register_t	pcb_lr;			/* link register */
	register_t	pcb_dscr;		/* dscr value */
	struct		pmap *pcb_pm;		/* pmap of our vmspace */
	jmp_buf		*pcb_onfault;		/* For use during
						    copyin/copyout */
	int		pcb_flags;
	struct fpu {
		union {
			double fpr;
			uint32_t vsr[4];
		} fpr[32];
		double	fpscr;	/* FPSCR stored as double for easier access */
	} pcb_fpu;		/* Floating point processor */
	unsigned int	pcb_fpcpu;		/* which CPU had our FPU
							stuff. */
	struct vec {
		uint32_t vr[32][4];
		uint32_t spare[2];
		uint32_t vrsave;
		uint32_t vscr;	/* aligned at vector element 3 */
	} pcb_vec __attribute__((aligned(16)));	/* Vector processor */
	unsigned int	pcb_veccpu;		/* which CPU had our vector
							stuff. */
	struct htm {
		uint64_t tfhar;
		uint64_t texasr;
		uint64_t tfiar;
	} pcb_htm;
	union {
		struct {
			vm_offset_t	usr_segm;	/* Base address */
			register_t	usr_vsid;	/* USER_SR segment */
		} aim;
		struct {
			register_t	dbcr0;
		} booke;
	} pcb_cpu;
	vm_offset_t pcb_lastill;	/* Last illegal instruction */
};

struct trapframe {
	register_t fixreg[32];
	register_t lr;
	register_t cr;
	register_t xer;
	register_t ctr;
	register_t srr0;
	register_t srr1;
	register_t exc;
	register_t dar;	/* DAR/DEAR filled in on DSI traps */
	union {
		struct {
			/* dsisr only filled on a DSI trap */
			register_t dsisr;
		} aim;
		struct {
			register_t esr;
			register_t dbcr0;
		} booke;
	} cpu;
};
