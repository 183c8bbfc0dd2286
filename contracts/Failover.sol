// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Assignment.sol";
import "./Settlement.sol";

/// Fail-over (contracts/failover.py): the running machine records checkpoints; anyone moves an order off a
/// machine that went silent, to a machine drawn as order creation draws. A fine-tune fails when none is left,
/// and its owner hands the latest checkpoint's key to the new machine; a deployment's dead replica releases its
/// seat with the seconds it served, and the deployment goes on with a new machine, one fewer, or fails if it
/// was the last.
library Failover {
    string internal constant NO_MACHINE_LEFT = "no eligible machine is left to take the order over";

    function recordCheckpoint(
        State storage s,
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        uint64 step,
        uint64 usageSeconds,
        bytes32 digest,
        string calldata noticeUri
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        if (step == 0 || step > MAX_AMOUNT) revert BadField("step");
        if (usageSeconds > MAX_AMOUNT) revert BadField("usage_seconds");
        Base.text(noticeUri, MAX_URI, false, "notice_uri");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Finetune);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, orderId);
        Base.providedMachine(s, machineId, sender);
        if (order.state != OrderState.Running) revert WrongOrderState(orderId, order.state, WHEN_CHECKPOINTING);
        Checkpoint storage last = Base.slot(s, orderId, machineId);
        if (last.machineId != bytes8(0) && (step <= last.step || usageSeconds < last.usageSeconds)) {
            revert CheckpointBehind(machineId, last.step, last.usageSeconds);
        }
        (last.machineId, last.computeOffer, last.step) = (machineId, order.computeOffer, step);
        (last.usageSeconds, last.digest, last.updatedAt) = (usageSeconds, digest, Base.time());
        last.noticeUri = noticeUri;
        emit OrderCheckpointed(Base.seq(s), orderId, machineId, step, usageSeconds, digest, noticeUri);
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
        bool serving = order.kind == OrderKind.Inference;
        Checkpoint storage seat = Base.slot(s, orderId, machineId);
        bytes8 like = serving ? seat.computeOffer : order.computeOffer;
        uint64 share = serving ? uint64(Settlement.leave(s, order, machineId)) : _capped(order, seat.usageSeconds);
        (seat.machineId, seat.computeOffer, seat.usageSeconds) = (machineId, like, share);
        (seat.released, seat.updatedAt) = (true, Base.time());
        order.usageSeconds += share;
        bytes32 engineDigest = s.offers[order.engineOffer].contentDigest;
        bytes8[] memory computes = Assignment.accepting(s, engineDigest, order.leaseHours, like);
        (Candidates memory found,) = Assignment.candidates(s, orderId, Base.contentOffers(order), computes, serving);
        (bytes8[] memory picked, bytes8[] memory offers) =
            Assignment.draw(blockhash(block.number - 1), orderId, found, 1, true);
        if (picked.length == 0 && (!serving || order.machines.length == 1)) {
            Settlement.settle(s, order, new Settlement.Share[](0), false);
            Settlement.close(s, order, OrderState.Failed);
            order.failureReason = NO_MACHINE_LEFT;
            emit OrderFailed(Base.seq(s), orderId, machineId, NO_MACHINE_LEFT, "");
            return;
        }
        _voidGrants(s.grants[orderId], machineId);
        s.busy[machineId] -= 1;
        if (picked.length == 0) {
            _drop(order.machines, machineId);
            uint256 needed = Base.contentOffers(order).length * order.machines.length;
            if (order.state == OrderState.PendingGrants && s.grants[orderId].length == needed) {
                order.state = OrderState.Ready;
            }
            emit OrderReassigned(Base.seq(s), orderId, machineId, bytes8(0));
            return;
        }
        for (uint256 i = 0; i < order.machines.length; i++) {
            if (order.machines[i] == machineId) order.machines[i] = picked[0];
        }
        s.busy[picked[0]] += 1;
        if (serving) {
            Checkpoint storage taken = Base.slot(s, orderId, picked[0]);
            (taken.machineId, taken.computeOffer, taken.updatedAt) = (picked[0], offers[0], Base.time());
            if (order.state == OrderState.Ready) order.state = OrderState.PendingGrants;
        } else {
            order.computeOffer = offers[0];
            order.state = OrderState.PendingGrants;
        }
        emit OrderReassigned(Base.seq(s), orderId, machineId, picked[0]);
    }

    /// The owner hands the latest released checkpoint's key to a machine the fine-tune was moved to.
    function postResumeGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId, bytes calldata sealedKey)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        if (sealedKey.length == 0 || sealedKey.length > MAX_SEALED_KEY) revert BadField("sealed_key");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Finetune);
        if (order.owner != sender) revert NotOrderOwner(TO_RESUME, orderId, order.owner);
        if (order.state > OrderState.Ready) revert WrongOrderState(orderId, order.state, WHEN_RESUMING);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_GRANT, machineId, orderId);
        bytes32 digest = _latestReleased(s.checkpoints[orderId]);
        if (digest == bytes32(0)) revert NoReleasedCheckpoint(orderId);
        bytes32 key = keccak256(abi.encode(orderId, machineId));
        if (s.resumed[key]) revert ResumeGrantExists(orderId, machineId);
        s.resumed[key] = true;
        s.resumeGrants[orderId].push(ResumeGrant(machineId, digest, sealedKey, Base.time()));
        emit ResumeGranted(Base.seq(s), orderId, machineId, digest);
    }

    /// A fine-tune's dead machine is paid its last recorded usage, capped by what is left of the lease.
    function _capped(Order storage order, uint64 metered) private view returns (uint64) {
        uint64 left = uint64(order.leaseHours) * 3600 - order.usageSeconds;
        return metered < left ? metered : left;
    }

    /// The digest of the released checkpoint with the highest step (the lowest machine id on a tie), or zero.
    function _latestReleased(Checkpoint[] storage checkpoints) private view returns (bytes32 digest) {
        uint64 step;
        bytes8 machineId;
        for (uint256 i = 0; i < checkpoints.length; i++) {
            Checkpoint storage checkpoint = checkpoints[i];
            if (!checkpoint.released || checkpoint.digest == bytes32(0)) continue;
            bool later = checkpoint.step > step || (checkpoint.step == step && checkpoint.machineId < machineId);
            if (digest == bytes32(0) || later) {
                (digest, step, machineId) = (checkpoint.digest, checkpoint.step, checkpoint.machineId);
            }
        }
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

    /// Remove ``machineId`` from ``machines``, keeping the others in order.
    function _drop(bytes8[] storage machines, bytes8 machineId) private {
        uint256 kept;
        for (uint256 i = 0; i < machines.length; i++) {
            if (machines[i] == machineId) continue;
            machines[kept++] = machines[i];
        }
        machines.pop();
    }
}
