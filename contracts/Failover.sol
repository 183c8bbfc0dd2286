// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Assignment.sol";
import "./Settlement.sol";

/// Fail-over (contracts/failover.py): the running machine records checkpoints; anyone moves an order off a
/// machine that went silent, to a machine drawn as order creation draws, or fails it when none is left.
library Failover {
    string internal constant NO_MACHINE_LEFT = "no eligible machine is left to take the order over";

    function recordCheckpoint(
        State storage s,
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        uint64 step,
        uint64 usageSeconds,
        bytes32 digest
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        if (step == 0 || step > MAX_AMOUNT) revert BadField("step");
        if (usageSeconds > MAX_AMOUNT) revert BadField("usage_seconds");
        Order storage order = Base.order(s, orderId);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, orderId);
        Base.providedMachine(s, machineId, sender);
        if (order.state != OrderState.Running) revert WrongOrderState(orderId, order.state, WHEN_CHECKPOINTING);
        Checkpoint storage last = _slot(s, orderId, machineId);
        if (last.machineId != bytes8(0) && (step <= last.step || usageSeconds < last.usageSeconds)) {
            revert CheckpointBehind(machineId, last.step, last.usageSeconds);
        }
        (last.machineId, last.computeOffer, last.step) = (machineId, order.computeOffer, step);
        (last.usageSeconds, last.digest, last.updatedAt) = (usageSeconds, digest, Base.time());
        emit OrderCheckpointed(Base.seq(s), orderId, machineId, step, usageSeconds, digest);
    }

    /// Anyone may move an order off an assigned machine silent for longer than the heartbeat timeout.
    function reassignOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId) external {
        Base.begin(s, nonce);
        Order storage order = Base.order(s, orderId);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, orderId);
        if (order.state > OrderState.Running) revert WrongOrderState(orderId, order.state, WHEN_REASSIGNING);
        uint64 last = Base.machine(s, machineId).lastHeartbeat;
        uint64 timeout = s.params.heartbeatTimeout;
        if (Base.time() <= last || Base.time() - last <= timeout) revert MachineAlive(machineId, last, timeout);
        order.usageSeconds += _release(s, order, machineId);
        bytes32 engineDigest = s.offers[order.engineOffer].contentDigest;
        bytes8[] memory computes = Assignment.accepting(s, engineDigest, order.leaseHours, order.computeOffer);
        (Candidates memory found,) = Assignment.candidates(s, orderId, _content(order), computes);
        (bytes8[] memory picked, bytes8 offerId) = Assignment.draw(blockhash(block.number - 1), orderId, found, 1);
        if (picked.length == 0) {
            Settlement.settle(s, order, 0, false);
            Settlement.close(s, order, OrderState.Failed);
            order.failureReason = NO_MACHINE_LEFT;
            emit OrderFailed(Base.seq(s), orderId, machineId, NO_MACHINE_LEFT);
            return;
        }
        _voidGrants(s.grants[orderId], machineId);
        for (uint256 i = 0; i < order.machines.length; i++) {
            if (order.machines[i] == machineId) order.machines[i] = picked[0];
        }
        s.busy[machineId] -= 1;
        s.busy[picked[0]] += 1;
        order.computeOffer = offerId;
        order.state = OrderState.PendingGrants;
        emit OrderReassigned(Base.seq(s), orderId, machineId, picked[0]);
    }

    /// Release the dead machine's checkpoint with the usage share it is paid for; returns that share.
    function _release(State storage s, Order storage order, bytes8 machineId) private returns (uint64 share) {
        Checkpoint storage checkpoint = _slot(s, order.id, machineId);
        uint64 left = uint64(order.leaseHours) * 3600 - order.usageSeconds;
        share = checkpoint.usageSeconds < left ? checkpoint.usageSeconds : left;
        (checkpoint.machineId, checkpoint.computeOffer, checkpoint.usageSeconds) = (machineId, order.computeOffer, share);
        (checkpoint.released, checkpoint.updatedAt) = (true, Base.time());
    }

    /// The (order, machine) checkpoint, appended empty (machine id zero) if there is none yet.
    function _slot(State storage s, bytes8 orderId, bytes8 machineId) private returns (Checkpoint storage) {
        bytes32 key = keccak256(abi.encode(orderId, machineId));
        Checkpoint[] storage all = s.checkpoints[orderId];
        if (s.checkpointSlot[key] == 0) {
            all.push();
            s.checkpointSlot[key] = all.length;
        }
        return all[s.checkpointSlot[key] - 1];
    }

    /// Grants sealed to the dead machine are void: delete them, keeping the others in order.
    function _voidGrants(Grant[] storage grants, bytes8 machineId) private {
        uint256 kept;
        for (uint256 i = 0; i < grants.length; i++) {
            if (grants[i].machineId == machineId) continue;
            if (kept != i) grants[kept] = grants[i];
            kept++;
        }
        while (grants.length > kept) grants.pop();
    }

    /// The content offers in the order the contract reads them: model, datasets…, engine.
    function _content(Order storage order) private view returns (bytes8[] memory content) {
        uint256 count = order.datasetOffers.length;
        content = new bytes8[](count + 2);
        content[0] = order.modelOffer;
        for (uint256 i = 0; i < count; i++) {
            content[i + 1] = order.datasetOffers[i];
        }
        content[count + 1] = order.engineOffer;
    }
}
