// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Slashing (contracts/disputes.py): disputes over replicas' conflicting commitments, and replicas that let a
/// request time out. The EVM cannot check the loaders' Ed25519 signatures on the commitments, so the
/// attestation registrar verifies them off chain against the machines' loader keys on this chain, judges them
/// with cloister.consensus.verdict.decide and co-signs the verdict; the contract checks that signature and
/// does the slashing and the rewards.
library Disputes {
    string private constant DISPUTE_TAG = "cloister/evm-dispute/v1";

    /// Each dissenter's provider loses ``disputeSlashBps`` of its stake; ``refereeShareBps`` of the total goes
    /// to the majority's referees (or, without referees, to the majority), the rest to the majority, each pot
    /// in equal integer shares; what does not divide evenly is burned.
    function openDispute(
        State storage s,
        uint64 nonce,
        bytes32 txHash,
        DisputeInput calldata input,
        bytes calldata registrarSignature
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        _checkInput(input);
        Order storage order = Base.gatewayOrder(s, input.orderId, sender);
        bytes32 key = keccak256(abi.encode(input.orderId, input.requestDigest));
        if (s.disputed[key]) revert DisputeExists(input.orderId, input.requestDigest);
        bytes32 statement = keccak256(abi.encode(DISPUTE_TAG, address(this), keccak256(abi.encode(input))));
        Base.registrarSigned(s, statement, registrarSignature);
        _seated(s, input.orderId, input.majority);
        _seated(s, input.orderId, input.dissenters);
        bytes8 id = Base.newId(txHash);
        if (s.disputeIds[id]) revert IdTaken(id);
        (s.disputed[key], s.disputeIds[id]) = (true, true);
        Dispute storage dispute = s.disputes[input.orderId].push();
        (dispute.id, dispute.requestDigest, dispute.outputDigest) = (id, input.requestDigest, input.outputDigest);
        (dispute.openedBy, dispute.createdAt) = (sender, Base.time());
        for (uint256 i = 0; i < input.commitments.length; i++) {
            dispute.commitments.push(input.commitments[i]);
        }
        uint256 paid;
        if (input.outputDigest != bytes32(0)) {
            uint256 total;
            for (uint256 i = 0; i < input.dissenters.length; i++) {
                total += _slash(s, input.dissenters[i], s.params.disputeSlashBps, id, bytes32(0));
            }
            dispute.slashed = input.dissenters;
            dispute.slashedAmount = uint64(total);
            paid = _reward(s, order, dispute, input, total);
        }
        emit DisputeOpened(
            Base.seq(s),
            id,
            input.orderId,
            input.requestDigest,
            input.outputDigest,
            dispute.slashed,
            dispute.rewarded,
            dispute.slashedAmount,
            dispute.slashedAmount - uint64(paid)
        );
    }

    /// A replica that did not commit before the gateway's timeout: ``timeoutSlashBps`` of its provider's stake
    /// goes to the deployment's owner.
    function reportTimeout(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId, bytes32 requestDigest)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.gatewayOrder(s, orderId, sender);
        if (!Base.hasSeat(s, orderId, machineId)) revert NoSeat(machineId, orderId);
        bytes32 key = keccak256(abi.encode(orderId, machineId, requestDigest));
        if (s.timedOut[key]) revert TimeoutExists(orderId, machineId, requestDigest);
        s.timedOut[key] = true;
        uint256 amount = _slash(s, machineId, s.params.timeoutSlashBps, bytes8(0), requestDigest);
        if (amount > 0) Base.credit(s, order.owner, amount);
        s.timeouts[orderId].push(Timeout(machineId, requestDigest, uint64(amount), Base.time()));
        emit ReplicaTimedOut(Base.seq(s), orderId, machineId, requestDigest, uint64(amount));
    }

    /// Take ``bps`` of the machine's provider's stake (floored); returns the amount taken.
    function _slash(State storage s, bytes8 machineId, uint64 bps, bytes8 disputeId, bytes32 requestDigest)
        private
        returns (uint256 amount)
    {
        bytes20 provider = Base.machine(s, machineId).provider;
        Account storage account = Base.account(s, provider);
        amount = uint256(account.stake) * bps / MAX_SHARE_BPS;
        account.stake -= uint64(amount);
        emit StakeSlashed(Base.seq(s), machineId, provider, uint64(amount), disputeId, requestDigest);
    }

    /// Pay each majority machine's provider its rewards, in machine id order; returns what was paid.
    function _reward(
        State storage s,
        Order storage order,
        Dispute storage dispute,
        DisputeInput calldata input,
        uint256 total
    ) private returns (uint256 paid) {
        uint256 refereePot = total * s.params.refereeShareBps / MAX_SHARE_BPS;
        uint256 voters = input.majority.length;
        uint256 referees = input.referees.length;
        for (uint256 i = 0; i < voters; i++) {
            bytes8 machineId = input.majority[i];
            uint256 amount = (total - refereePot) / voters;
            if (referees == 0) {
                amount += refereePot / voters;
            } else if (_contains(input.referees, machineId)) {
                amount += refereePot / referees;
            }
            if (amount == 0) continue;
            bytes20 provider = s.machines[machineId].provider;
            Base.credit(s, provider, amount);
            emit DisputeRewarded(Base.seq(s), order.id, provider, uint64(amount), dispute.id, machineId);
            dispute.rewarded.push(machineId);
            paid += amount;
        }
    }

    /// What the Dispute record's reader accepts: 2 to 64 commitments of 1 to 4096 bytes, machine lists of at
    /// most 64 distinct ids.
    function _checkInput(DisputeInput calldata input) private pure {
        if (input.commitments.length < 2 || input.commitments.length > MAX_ITEMS) revert BadField("commitments");
        for (uint256 i = 0; i < input.commitments.length; i++) {
            uint256 size = input.commitments[i].length;
            if (size == 0 || size > MAX_COMMITMENT) revert BadField("commitments");
        }
        Base.distinct(input.majority, "commitments");
        Base.distinct(input.referees, "commitments");
        Base.distinct(input.dissenters, "commitments");
    }

    /// Revert unless every machine holds (or held) a seat on the order.
    function _seated(State storage s, bytes8 orderId, bytes8[] calldata machineIds) private view {
        for (uint256 i = 0; i < machineIds.length; i++) {
            if (!Base.hasSeat(s, orderId, machineIds[i])) revert NoSeat(machineIds[i], orderId);
        }
    }

    function _contains(bytes8[] calldata ids, bytes8 id) private pure returns (bool) {
        for (uint256 i = 0; i < ids.length; i++) {
            if (ids[i] == id) return true;
        }
        return false;
    }
}
