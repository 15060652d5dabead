// The one primitive the block scheduler (launch.h) needs: start a function on a stack of
// its own, and switch between such stacks. On x86-64 a switch saves and restores just the
// callee-saved registers (tens of nanoseconds); elsewhere, or with -DGPUCNN_EMU_UCONTEXT,
// it is POSIX swapcontext, which also makes a signal-mask system call on every switch.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && !defined(GPUCNN_EMU_UCONTEXT)

namespace gpucnn_emu {

struct Context {
    void* sp = nullptr;  // the stack pointer saved when this context was switched away from
};

// Pushes rbp, rbx, r12-r15 on the current stack, saves its pointer in *save, then loads
// the stack pointer `load` and pops the same registers from it; `ret` resumes that context.
extern "C" void gpucnn_emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl gpucnn_emu_switch
    .hidden gpucnn_emu_switch
    .type gpucnn_emu_switch, @function
gpucnn_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gpucnn_emu_switch, .-gpucnn_emu_switch
)");

// Lays out the stack so that the first switch to `context` pops six zero registers and
// "returns" into entry, with the stack aligned as after a call. entry must never return.
GPUCNN_EMU_RUNTIME inline void start_context(Context& context, void* stack, size_t size, void (*entry)()) {
    auto top = (reinterpret_cast<std::uintptr_t>(stack) + size) & ~std::uintptr_t(15);
    auto* slots = reinterpret_cast<void**>(top);
    slots[-1] = nullptr;                           // entry's (absent) return address
    slots[-2] = reinterpret_cast<void*>(entry);    // popped by gpucnn_emu_switch's ret
    for (int i = 3; i <= 8; ++i) slots[-i] = nullptr;  // rbp, rbx, r12-r15
    context.sp = slots - 8;
}

GPUCNN_EMU_RUNTIME inline void switch_context(Context& from, Context& to) { gpucnn_emu_switch(&from.sp, to.sp); }

}  // namespace gpucnn_emu

#else

#include <ucontext.h>

namespace gpucnn_emu {

struct Context {
    ucontext_t state;
};

GPUCNN_EMU_RUNTIME inline void start_context(Context& context, void* stack, size_t size, void (*entry)()) {
    getcontext(&context.state);
    context.state.uc_stack.ss_sp = stack;
    context.state.uc_stack.ss_size = size;
    context.state.uc_link = nullptr;
    makecontext(&context.state, entry, 0);
}

GPUCNN_EMU_RUNTIME inline void switch_context(Context& from, Context& to) { swapcontext(&from.state, &to.state); }

}  // namespace gpucnn_emu

#endif
